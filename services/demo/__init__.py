"""`nabij demo`: the embedded broker and store (the `nabij[demo]` extra) and the show."""
