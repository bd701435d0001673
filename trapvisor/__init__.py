"""trapvisor: a hypervisor written in Python.

A simulated IA-32 PC (``trapvisor.machine``), a virtual machine monitor hosting
unmodified kernels under the classic techniques (``trapvisor.vmm``), a VMM over
/dev/kvm (``trapvisor.kvm``) and the Popek-Goldberg theory as executable code
(``trapvisor.theory``).
"""

__version__ = "0.1.0"
