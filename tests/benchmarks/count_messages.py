"""Print how many messages a Retainer store holds (each stored once, by its id).

    python count_messages.py DATA_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

from agent.store import Store


def main() -> None:
    store = Store(Path(sys.argv[1]), create=False)
    ids = {doc["id"] for doc in store.iter_messages()}
    print(len(ids))


if __name__ == "__main__":
    main()
