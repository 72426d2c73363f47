"""Text read from files is printed as data: no terminal control sequences, no Rich markup."""

from rich.console import Console

from attnbench.text import clean, plain


def test_clean_escapes_control_characters() -> None:
    assert clean("a\x1b[2Jb") == "a\\x1b[2Jb"
    assert clean("two\nlines\r\x00\x9b") == "two\\nlines\\r\\x00\\x9b"
    assert clean("ordinary [text] é") == "ordinary [text] é"


def test_plain_is_printed_literally_by_rich() -> None:
    console = Console(record=True, width=200, force_terminal=True)
    console.print(plain("[bold red]pwn[/] \x1b[2JFAKE PASS [/oops]"))
    text = console.export_text()
    assert "[bold red]pwn[/]" in text and "\\x1b[2J" in text and "[/oops]" in text and "\x1b" not in text
