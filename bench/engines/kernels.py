"""Small pure-Python benchmark kernels in the style of pyperformance (written for Citadel).

``python kernels.py NAME [REPEAT] [WARMUP]`` runs one kernel WARMUP times (for PyPy's JIT), then
REPEAT timed times, and prints one JSON line: {"name", "times": [seconds, ...]}. The timing is
taken inside the program, so interpreter and engine start-up are not part of it. Kernels:
nbody (floating-point n-body simulation), richards (an OS task scheduler: objects, method calls,
branches), float (object creation with math), json_dumps (serializing nested data) and regex
(matching and substitution over generated text). Standard library only; runs on CPython and PyPy.
"""

from __future__ import annotations

import json
import math
import re
import sys
import time
from typing import Any, Callable, Dict, List, Optional

# --- nbody -------------------------------------------------------------------------------------------
SOLAR_MASS = 4 * math.pi * math.pi
DAYS = 365.24


def _bodies() -> List[List[float]]:
    """x, y, z, vx, vy, vz, mass of the sun and the four gas giants (orbital elements rounded)."""
    raw = [
        (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0),
        (4.841431, -1.160320, -0.103622, 0.001660, 0.007699, -0.000069, 0.000954),
        (8.343367, 4.124799, -0.403523, -0.002767, 0.004998, 0.000023, 0.000286),
        (12.894369, -15.111151, -0.223308, 0.002964, 0.002378, -0.000030, 0.0000437),
        (15.379697, -25.919314, 0.179258, 0.002680, 0.001628, -0.000095, 0.0000515),
    ]
    return [[x, y, z, vx * DAYS, vy * DAYS, vz * DAYS, m * SOLAR_MASS] for x, y, z, vx, vy, vz, m in raw]


def nbody(steps: int = 20000) -> float:
    bodies = _bodies()
    pairs = [(bodies[i], bodies[j]) for i in range(len(bodies)) for j in range(i + 1, len(bodies))]
    px = py = pz = 0.0
    for b in bodies:  # move the centre of mass to rest
        px -= b[3] * b[6]
        py -= b[4] * b[6]
        pz -= b[5] * b[6]
    sun = bodies[0]
    sun[3], sun[4], sun[5] = px / SOLAR_MASS, py / SOLAR_MASS, pz / SOLAR_MASS
    dt = 0.01
    for _ in range(steps):
        for a, b in pairs:
            dx, dy, dz = a[0] - b[0], a[1] - b[1], a[2] - b[2]
            mag = dt * (dx * dx + dy * dy + dz * dz) ** -1.5
            ma, mb = a[6] * mag, b[6] * mag
            a[3] -= dx * mb
            a[4] -= dy * mb
            a[5] -= dz * mb
            b[3] += dx * ma
            b[4] += dy * ma
            b[5] += dz * ma
        for body in bodies:
            body[0] += dt * body[3]
            body[1] += dt * body[4]
            body[2] += dt * body[5]
    energy = 0.0
    for a, b in pairs:
        energy -= a[6] * b[6] / math.sqrt((a[0] - b[0]) ** 2 + (a[1] - b[1]) ** 2 + (a[2] - b[2]) ** 2)
    return energy + sum(0.5 * b[6] * (b[3] ** 2 + b[4] ** 2 + b[5] ** 2) for b in bodies)


# --- richards: a small operating system's scheduler ------------------------------------------------
IDLE, WORKER, HANDLER_A, HANDLER_B, DEVICE_A, DEVICE_B = range(6)
KIND_DEVICE, KIND_WORK = 0, 1


class Packet:
    __slots__ = ("link", "ident", "kind", "count", "data")

    def __init__(self, link: Optional[Packet], ident: int, kind: int) -> None:
        self.link, self.ident, self.kind, self.count, self.data = link, ident, kind, 0, [0] * 4

    def append_to(self, queue: Optional[Packet]) -> Packet:
        self.link = None
        if queue is None:
            return self
        tail = queue
        while tail.link is not None:
            tail = tail.link
        tail.link = self
        return queue


class Task:
    """A task: a priority, an input queue, and three state bits (packet pending, waiting, held)."""

    def __init__(self, system: Scheduler, ident: int, priority: int, queue: Optional[Packet],
                 pending: bool, waiting: bool) -> None:
        self.system, self.ident, self.priority, self.queue = system, ident, priority, queue
        self.pending, self.waiting, self.held = pending, waiting, False
        self.next: Optional[Task] = system.tasks
        system.tasks = self
        system.table[ident] = self

    def blocked(self) -> bool:
        return self.held or (not self.pending and self.waiting)

    def take_packet(self) -> Optional[Packet]:
        if not (self.pending and self.waiting and not self.held):
            return None
        packet = self.queue
        assert packet is not None
        self.queue = packet.link
        self.pending, self.waiting, self.held = self.queue is not None, False, False
        return packet

    def add_packet(self, packet: Packet, current: Task) -> Task:
        if self.queue is None:
            self.queue = packet
            self.pending = True
            return self if self.priority > current.priority else current
        self.queue = packet.append_to(self.queue)
        return current

    def step(self, packet: Optional[Packet]) -> Optional[Task]:
        raise NotImplementedError


class IdleTask(Task):
    def __init__(self, system: Scheduler, count: int) -> None:
        super().__init__(system, IDLE, 0, None, pending=False, waiting=False)
        self.seed, self.count = 1, count

    def step(self, packet: Optional[Packet]) -> Optional[Task]:
        self.count -= 1
        if self.count == 0:
            return self.system.hold_self()
        if self.seed & 1 == 0:
            self.seed >>= 1
            return self.system.release(DEVICE_A)
        self.seed = (self.seed >> 1) ^ 0xD008
        return self.system.release(DEVICE_B)


class WorkerTask(Task):
    def __init__(self, system: Scheduler, queue: Packet) -> None:
        super().__init__(system, WORKER, 1000, queue, pending=True, waiting=True)
        self.destination, self.letter = HANDLER_A, 0

    def step(self, packet: Optional[Packet]) -> Optional[Task]:
        if packet is None:
            return self.system.wait()
        self.destination = HANDLER_B if self.destination == HANDLER_A else HANDLER_A
        packet.ident, packet.count = self.destination, 0
        for i in range(4):
            self.letter = self.letter + 1 if self.letter < 26 else 1
            packet.data[i] = self.letter
        return self.system.send(packet)


class HandlerTask(Task):
    def __init__(self, system: Scheduler, ident: int, queue: Packet) -> None:
        super().__init__(system, ident, 2000 + ident, queue, pending=True, waiting=True)
        self.work: Optional[Packet] = None
        self.devices: Optional[Packet] = None

    def step(self, packet: Optional[Packet]) -> Optional[Task]:
        if packet is not None:
            if packet.kind == KIND_WORK:
                self.work = packet.append_to(self.work)
            else:
                self.devices = packet.append_to(self.devices)
        work = self.work
        if work is None:
            return self.system.wait()
        if work.count >= 4:
            self.work = work.link
            return self.system.send(work)
        device = self.devices
        if device is None:
            return self.system.wait()
        self.devices = device.link
        device.count = work.data[work.count]
        work.count += 1
        return self.system.send(device)


class DeviceTask(Task):
    def __init__(self, system: Scheduler, ident: int) -> None:
        super().__init__(system, ident, 4000 + ident, None, pending=False, waiting=True)
        self.stored: Optional[Packet] = None

    def step(self, packet: Optional[Packet]) -> Optional[Task]:
        if packet is None:
            if self.stored is None:
                return self.system.wait()
            packet, self.stored = self.stored, None
            return self.system.send(packet)
        self.stored = packet
        return self.system.hold_self()


class Scheduler:
    def __init__(self) -> None:
        self.tasks: Optional[Task] = None
        self.table: List[Optional[Task]] = [None] * 6
        self.current: Optional[Task] = None
        self.hold_count = self.queue_count = 0

    def build(self, count: int) -> None:
        IdleTask(self, count)
        work = Packet(Packet(None, 0, KIND_WORK), 0, KIND_WORK)
        WorkerTask(self, work)
        for handler, device in ((HANDLER_A, DEVICE_A), (HANDLER_B, DEVICE_B)):
            queue = Packet(Packet(Packet(None, device, KIND_DEVICE), device, KIND_DEVICE), device, KIND_DEVICE)
            HandlerTask(self, handler, queue)
        DeviceTask(self, DEVICE_A)
        DeviceTask(self, DEVICE_B)

    def run(self) -> None:
        task = self.tasks
        while task is not None:
            if task.blocked():
                task = task.next
            else:
                self.current = task
                task = task.step(task.take_packet())

    def hold_self(self) -> Optional[Task]:
        assert self.current is not None
        self.hold_count += 1
        self.current.held = True
        return self.current.next

    def wait(self) -> Optional[Task]:
        assert self.current is not None
        self.current.waiting = True
        return self.current

    def release(self, ident: int) -> Optional[Task]:
        task = self.table[ident]
        assert task is not None and self.current is not None
        task.held = False
        return task if task.priority > self.current.priority else self.current

    def send(self, packet: Packet) -> Optional[Task]:
        target = self.table[packet.ident]
        assert target is not None and self.current is not None
        self.queue_count += 1
        packet.link, packet.ident = None, self.current.ident
        return target.add_packet(packet, self.current)


def richards(rounds: int = 8) -> int:
    total = 0
    for _ in range(rounds):
        system = Scheduler()
        system.build(10000)
        system.run()
        total += system.queue_count + system.hold_count
    return total


# --- float -------------------------------------------------------------------------------------------
class Point:
    __slots__ = ("x", "y", "z")

    def __init__(self, i: float) -> None:
        self.x = x = math.sin(i)
        self.y = math.cos(i) * 3
        self.z = (x * x) / 2

    def normalize(self) -> None:
        norm = math.sqrt(self.x * self.x + self.y * self.y + self.z * self.z)
        self.x /= norm
        self.y /= norm
        self.z /= norm

    def maximize(self, other: Point) -> Point:
        self.x = max(self.x, other.x)
        self.y = max(self.y, other.y)
        self.z = max(self.z, other.z)
        return self


def float_points(count: int = 100000) -> float:
    points = [Point(i) for i in range(count)]
    for p in points:
        p.normalize()
    best = points[0]
    for p in points[1:]:
        best = best.maximize(p)
    return best.x + best.y + best.z


# --- json_dumps --------------------------------------------------------------------------------------
def _document(i: int) -> Dict[str, Any]:
    return {"id": i, "name": f"item-{i}", "price": i * 1.25, "tags": ["a", "b", str(i % 7)],
            "owner": {"login": f"user{i % 13}", "active": i % 2 == 0, "score": None},
            "text": "caf\u00e9 \"quoted\" line\nnext" * (1 + i % 3)}


def json_dumps(rounds: int = 40) -> int:
    docs = [_document(i) for i in range(300)]
    size = 0
    for _ in range(rounds):
        size += len(json.dumps(docs))
        size += len(json.dumps(docs, sort_keys=True, indent=2))
    return size


# --- regex -------------------------------------------------------------------------------------------
def _text() -> str:
    words = ["alpha", "beta", "gamma@example.org", "2026-11-27", "192.168.0.17", "ERROR", "warning:", "x=42",
             "https://example.com/path?q=1", "Delta", "epsilon", "0xdeadbeef"]
    return "\n".join(" ".join(words[(i * 7 + j) % len(words)] for j in range(11)) for i in range(1500))


PATTERNS = [
    re.compile(r"[\w.+-]+@[\w-]+\.[\w.]+"),
    re.compile(r"\b\d{4}-\d{2}-\d{2}\b"),
    re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}\b"),
    re.compile(r"https?://[^\s]+"),
    re.compile(r"^(\w+) .*?(ERROR|warning:)", re.MULTILINE),
    re.compile(r"\b[A-Z][a-z]+\b"),
    re.compile(r"0x[0-9a-f]+"),
]


def regex(rounds: int = 6) -> int:
    text = _text()
    found = 0
    for _ in range(rounds):
        for pattern in PATTERNS:
            found += len(pattern.findall(text))
        found += len(re.sub(r"(\w+)=(\d+)", r"\2=\1", text))
        found += sum(1 for line in text.splitlines() if re.search(r"gamma|delta|epsilon", line))
    return found


KERNELS: Dict[str, Callable[[], Any]] = {
    "nbody": nbody, "richards": richards, "float": float_points, "json_dumps": json_dumps, "regex": regex,
}


def main(argv: List[str]) -> int:
    name = argv[1]
    repeat = int(argv[2]) if len(argv) > 2 else 5
    warmup = int(argv[3]) if len(argv) > 3 else 2
    kernel = KERNELS[name]
    for _ in range(warmup):
        kernel()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        kernel()
        times.append(time.perf_counter() - start)
    print(json.dumps({"name": name, "times": times}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
