"""The quickstart application: everything here is sealed, and runs unchanged inside Citadel.

Run with a key file, it greets the name its arguments give. Run with a CAS, the session's policy
gives it its arguments, its environment (HELLO_TOKEN: a secret the CAS generated) and a file the
engine serves from memory (HELLO_MOTTO names its path); none of them is ever on the host's disk.
"""

import os
import sys

from greeter import greet, secret_recipe

if __name__ == "__main__":
    name = sys.argv[1] if len(sys.argv) > 1 else "world"
    print(greet(name))
    print(f"the sealed recipe has {len(secret_recipe())} steps")
    token = os.environ.get("HELLO_TOKEN")
    if token is not None:
        print(f"HELLO_TOKEN from the CAS: a secret of {len(token)} characters (not shown)")
    motto = os.environ.get("HELLO_MOTTO")
    if motto:
        with open(motto, encoding="utf-8") as fh:
            print(f"{motto} (injected, in memory only): {fh.readline().strip()}")
