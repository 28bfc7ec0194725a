"""A stand-in for the `tiktoken` package, for the pacing benchmark's run of
OpenAI's cookbook script (scripts/bench/pacing_anchor.py): this machine has
no PyPI, and tiktoken downloads its encodings from the internet anyway.

`encode` counts tokens exactly as `embedrt mock` (and embedrt's own
estimate, protocol/src/provider.cpp `estimate_tokens`) does for ASCII text:
a run of letters is ceil(n / 4) tokens, a run of digits ceil(n / 3), any
other ASCII character one. Against the real API, tiktoken counts exactly as
the upstream does; this counts exactly as the mock does, so the script's
token buckets see what the mock's bucket sees. The ids are meaningless.
"""


class Encoding:
    def __init__(self, name):
        self.name = name

    def encode(self, text):
        if not isinstance(text, str):
            raise TypeError("encode takes a str")
        n = 0
        i = 0
        size = len(text)
        while i < size:
            c = text[i]
            if not c.isascii():
                raise ValueError("the shim counts ASCII text only")
            j = i + 1
            if c.isalpha():
                while j < size and text[j].isascii() and text[j].isalpha():
                    j += 1
                n += (j - i + 3) // 4
            elif c.isdigit():
                while j < size and text[j].isascii() and text[j].isdigit():
                    j += 1
                n += (j - i + 2) // 3
            else:
                n += 1
            i = j
        return list(range(n))


def get_encoding(name):
    return Encoding(name)
