"""Linux guests from Debian's packages: fetching the kernel and busybox (``assets``) and
writing the initramfs around busybox (``initramfs``).  Used by the simulated PC's
guest:linux and by the KVM backend's Linux boot; depends on nothing but ``errors``."""
