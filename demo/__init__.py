"""`make demo`: the closed loop on lab hosts, on loopback (see the README's first section and demo/README.md)."""
