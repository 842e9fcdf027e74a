"""Rewrite the op list in README.md (between <!-- ops:start --> and
<!-- ops:end -->) from the op table, fastlstm.ops.table.

    python tools/update_readme_ops.py [--check]

--check exits 1 when the README is out of date (tests/test_docs.py runs it).
"""
import os
import sys

START, END = "<!-- ops:start -->", "<!-- ops:end -->"
README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def expected(text):
    from fastlstm.ops import table  # noqa: F401  (importing fastlstm.ops declares the ops)
    import fastlstm.ops  # noqa: F401
    i, j = text.index(START) + len(START), text.index(END)
    return text[:i] + "\n" + table.op_list_markdown() + "\n" + text[j:]


def main(argv):
    with open(README) as f:
        text = f.read()
    new = expected(text)
    if "--check" in argv:
        if new != text:
            print("README.md's op list is out of date: python tools/update_readme_ops.py")
            return 1
        return 0
    with open(README, "w") as f:
        f.write(new)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
