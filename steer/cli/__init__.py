"""The command line: `steer run|validate` (main.py), `steer vectors ...` (vectors.py), and
`steer readout|monitor|corpus` (texts.py); thin layers over the public API."""
