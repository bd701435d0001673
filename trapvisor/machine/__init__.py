"""The simulated PC: IA-32 CPU, physical memory, buses, devices, loaders."""
