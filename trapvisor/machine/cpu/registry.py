"""Which compile function handles which mnemonic.

Each ``ops_*`` module registers its compile functions here with
``@handles(Mnemonic.X, ...)``.  A compile function takes ``(cpu, ins)`` (ins
is an iced-x86 Instruction) and returns ``(closure, kind)``:

* ``NORMAL``: the closure leaves EIP alone; the block goes on;
* ``END``: the block must end after it (it changes how later instructions
  are checked or translated: CR writes, segment loads, STI, HLT, OUT...),
  and EIP falls through to the next instruction;
* ``JUMP``: the closure sets ``cpu.eip`` itself (every control transfer).
"""

NORMAL, END, JUMP = 0, 1, 2

HANDLERS: dict = {}


def handles(*mnemonics):
    def register(fn):
        for m in mnemonics:
            HANDLERS[m] = fn
        return fn
    return register
