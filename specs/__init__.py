"""Shipped YAML specs (installed as the package ``reparam_zoo.specs``)."""
