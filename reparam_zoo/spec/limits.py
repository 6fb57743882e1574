"""What a spec may ask for; checked before anything is allocated (docs/spec.md, "Limits")."""

LIMITS = {"file_bytes": 1_000_000, "yaml_nodes": 100_000, "yaml_depth": 64, "branches": 64, "count": 64,
          "kernel": 1024, "dilation": 1024, "padding": 4096, "channels": 65_536,
          # a block's weights (every branch copy plus the folded kernel), in values: 2**30 = 4 GiB in float32
          "block_weights": 2**30,
          # |init| of a scale norm (float32 holds 3.4e38; a scale is about 1)
          "scale_init": 1e6,
          # net specs
          "net_blocks": 1024, "net_stages": 64, "net_stride": 64, "net_input_size": 4096}
