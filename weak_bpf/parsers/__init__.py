"""Pure readers: bytes in, frozen values out, ParseError on bad input. No I/O here."""
