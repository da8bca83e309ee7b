"""The launcher: starts the engine from the untrusted host side and explains how it ended."""
