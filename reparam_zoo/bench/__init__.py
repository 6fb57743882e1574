"""The bench room: training and measuring blocks on real data.

- :mod:`~reparam_zoo.bench.data`: the datasets (Fashion-MNIST, MNIST, CIFAR-10, an image folder, the
  embedded digits), normalised tensors with a train and a validation split.
- :mod:`~reparam_zoo.bench.trainer`: the one trainer of compare, the search study and the supernet —
  a net with one block trained for one seed, folded, verified and measured — with typed hooks
  (:class:`~reparam_zoo.bench.trainer.TrainHooks`: a loss term, an after-step update, an epoch callback).
- :mod:`~reparam_zoo.bench.measure`: accuracy, latency, training activation memory, INT8 accuracy.
- :mod:`~reparam_zoo.bench.compare`: ``reparam-zoo compare`` — every block against a control over
  rounds of seeds, one latency per distinct deployed net, result files put in place together.
- :mod:`~reparam_zoo.bench.report`: compare's summaries, paired statistics, conclusion, tables, plot.
- :mod:`~reparam_zoo.bench.zoo`: the docs/zoo.md table of every shipped spec on a reference layer.

It builds on the engine and interop rooms; the search room trains through it.
"""
