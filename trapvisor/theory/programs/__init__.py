"""Example programs (.tv assembly) and an example user ISA (toy_isa.py) for `trapvisor theory run`."""
