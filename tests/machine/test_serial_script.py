"""The scripted console (machine/serial_script.py): a line is typed only after the prompt."""
from trapvisor.machine.serial_script import SerialScript


def test_lines_are_typed_at_each_prompt_and_done_after_the_last():
    ended = []
    s = SerialScript(["echo hi", "exit"], prompt=rb"# (\x1b\[6n)?$", on_done=lambda: ended.append(1))
    assert s.input() == b""
    s.out(b"booting...\r\n")
    assert s.input() == b""
    s.out(b"/ # \x1b[6n")
    assert s.input() == b"echo hi\n" and s.input() == b""
    s.out(b"echo hi\r\nhi\r\n")
    assert s.input() == b""
    s.out(b"/ # ")
    assert s.input() == b"exit\n" and not s.done
    s.out(b"exit\r\n/ # ")
    assert s.done and ended == [1]
    assert s.text.endswith("exit\r\n/ # ")
