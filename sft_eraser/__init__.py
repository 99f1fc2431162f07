"""The `sft-eraser` command: joins the offline commands (training) and `serve` (server).

Only this package imports both halves; they never import each other.
"""
