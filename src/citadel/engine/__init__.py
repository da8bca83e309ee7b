"""The Citadel engine: the protected process that verifies itself, opens a sealed image, installs
its shields (sealed importer, extension loading from memory, file shield, audit-hook guard) and
runs the program. Engine-side code uses only the standard library and `cryptography`."""
