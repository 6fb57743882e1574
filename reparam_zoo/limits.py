"""What a spec may ask for; checked before anything is allocated (docs/spec.md, "Limits")."""

LIMITS = {"file_bytes": 1_000_000, "yaml_nodes": 100_000, "yaml_depth": 64, "branches": 64, "count": 64,
          "kernel": 1024, "dilation": 1024, "padding": 4096, "channels": 65_536}
