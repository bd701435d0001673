"""trapvisor on KVM: a pure-Python KVM layer (ctypes, mmap) driving the project's device models.

Modules: ``ioctls`` (ABI from the uapi headers), ``hostinfo`` (what /dev/kvm
is), ``vm``/``vcpu``/``guestmem`` (the objects), ``cpuid`` (what the guest
sees), ``exits`` (typed exits and the one handler), ``entry_state`` (initial
registers), ``boot_linux`` (Linux; its packages and initramfs: ``trapvisor.linux``), ``runner``
(the exit loop and ``run --accel kvm``), ``diagnose`` (why a guest stopped).
"""
