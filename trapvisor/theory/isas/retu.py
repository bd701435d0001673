"""``retu``: a machine with a control-sensitive, unprivileged instruction.

What it models: a return-to-user instruction that does not check the mode,
the flaw of PDP-10 ``JRST 1`` and of x86 ``POPF`` generalised so that it also
bites in user mode.  ``RETU a`` loads P and R from the PSW word in ``E[a]`` and
enters user mode -- in *either* mode, without trapping.  From supervisor mode
it is an ordinary return to a user program; from user mode it lets a program
load its own relocation-bounds register, i.e. change the resources it has.

By Popek & Goldberg's definitions RETU is control sensitive (it changes R or M
without the trap sequence) from user-mode states too, hence *user* sensitive,
and it is not privileged: neither Theorem 1 nor Theorem 3 applies.  Under a
trap-and-emulate monitor a guest's RETU reloads the *real* R with the guest's
virtual (unrelocated) bounds, escaping its partition.
"""

from trapvisor.theory.isas.s360 import base
from trapvisor.theory.formal_machine import Mode, PSW

ISA_ = base(
    "retu",
    "Not virtualizable, not even hybrid: RETU changes R/M without trapping, from either mode.",
    "PDP-10 JRST 1 / x86 POPF: an unchecked return to user mode",
)


@ISA_.instruction("RETU a", opcode=11)
def retu(c, a):
    """P, R := the PSW in E[a]; M := u.  Unprivileged: never traps for mode."""
    psw = c.unpack_psw(c.load(a))
    c.set_psw(PSW(Mode.U, psw.P, psw.R))
