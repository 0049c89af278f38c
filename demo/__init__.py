"""`make demo`: the closed loop on lab hosts, on loopback (docs/demo.md)."""
