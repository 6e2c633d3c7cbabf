"""The prompts and the quick editing settings the editing tests share (imported by them, not collected)."""

SOURCE = "a small red circle on the left on a dark background"
TARGET = "a small red circle on the right on a dark background"
#: command-line settings that make an edit of a tiny pipeline take a second
QUICK = ["--num-steps", "4", "--steps-source", "1", "--text-steps", "2", "--null-inner-steps", "2"]
