"""The quickstart application: everything here is sealed, and runs unchanged inside Citadel."""

import sys

from greeter import greet, secret_recipe

if __name__ == "__main__":
    name = sys.argv[1] if len(sys.argv) > 1 else "world"
    print(greet(name))
    print(f"the sealed recipe has {len(secret_recipe())} steps")
