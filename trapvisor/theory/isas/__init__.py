"""The bundled ISAs of the formal machine, one module each.

=========  ==============================================================
s360       virtualizable (IBM System/360 in spirit)
retu       control-sensitive unprivileged return (PDP-10 JRST 1, x86 POPF)
lra67      location-sensitive LRA (IBM 360/67)
mfpi11     mode-sensitive RDMODE (PDP-11/45 MFPI, x86 PUSH CS)
pdp10      supervisor-sensitive only: hybrid-virtualizable (PDP-10)
paged      sensitive yet virtualizable: Theorem 1 is not necessary
=========  ==============================================================
"""

BUNDLED = ("s360", "retu", "lra67", "mfpi11", "pdp10", "paged")
