"""The context pool: one TensorRT execution context, CUDA stream and set of I/O buffers per thread;
activation memory from a bounded pool shared by all threads.

TensorRT contexts are not thread-safe; the engine is. PerThread makes a thread's resources on its
first call and frees them once the thread has ended; InFlight lets close() wait for running predicts
before the contexts and the engine are freed. A context made with the default strategy (kSTATIC)
allocates its own activation memory, the largest over the engine's profiles, so N threads would hold
N copies (inline attention: [B, H, N, N] scores each). Here contexts are made with
ExecutionContextAllocationStrategy.USER_MANAGED and borrow one of at most `size` blocks of
engine.device_memory_size_v2 bytes (the largest profile's need) from a Bounded pool for each run:
IExecutionContext::setDeviceMemoryV2 (include/NvInferRuntime.h, v10.13.0 and v11.1) says the memory is
in use from enqueueV3 until the work completes and may not be used by a context running in parallel,
so a block is handed back only after the run's stream has synchronised. PerThread, Bounded and
InFlight are pure Python (tested without TensorRT).
"""

from __future__ import annotations

import ctypes
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import numpy as np

from climax_deploy.errors import BadInputError, InferenceError
from climax_deploy.optional import POLYGRAPHY

if TYPE_CHECKING:
    import tensorrt as trt

T = TypeVar("T")


class PerThread(Generic[T]):
    """One resource per live thread, made on the thread's first call and freed once the thread has ended.

    A serving process that spawns threads would otherwise keep an execution context, a stream and
    device buffers for every thread it ever ran. Dead threads' resources are freed on the next call
    from any thread (and all of them by close()); a thread id the OS reuses gets a fresh resource.
    """

    def __init__(self, make: Callable[[], T], free: Callable[[T], None]) -> None:
        self._make, self._free = make, free
        self._items: dict[int, tuple[weakref.ref[threading.Thread], T]] = {}
        self._lock = threading.Lock()

    def get(self) -> T:
        """This thread's resource (made now if it has none)."""
        thread = threading.current_thread()
        with self._lock:
            self._reap()
            entry = self._items.get(thread.ident or 0)
            if entry is None:
                entry = (weakref.ref(thread), self._make())
                self._items[thread.ident or 0] = entry
            return entry[1]

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def _reap(self) -> None:
        for key, (ref, item) in list(self._items.items()):
            owner = ref()
            if owner is None or not owner.is_alive():
                del self._items[key]
                self._free(item)

    def close(self) -> None:
        """Free every thread's resource."""
        with self._lock:
            items = [item for _, item in self._items.values()]
            self._items.clear()
        for item in items:
            self._free(item)


class Bounded(Generic[T]):
    """At most `size` resources, made on demand and lent to one caller at a time; callers beyond that wait.

    Memory is bounded by `size` blocks however many threads call; a resource is reused by the next caller.
    """

    def __init__(self, make: Callable[[], T], free: Callable[[T], None], size: int) -> None:
        if size < 1:
            raise BadInputError(f"expected at least 1 shared activation block, got {size}")
        self._make, self._free, self.size = make, free, size
        self._idle: list[T] = []
        self._made = 0
        self._closed = False
        self._changed = threading.Condition()

    @contextmanager
    def borrow(self) -> Iterator[T]:
        """One resource for the body's duration (made if fewer than `size` exist and none is idle)."""
        with self._changed:
            self._changed.wait_for(lambda: self._closed or self._idle or self._made < self.size)
            if self._closed:
                raise BadInputError("this activation pool was closed")
            if self._idle:
                item = self._idle.pop()
            else:
                self._made += 1
                try:
                    item = self._make()
                except BaseException:
                    self._made -= 1
                    self._changed.notify()
                    raise
        try:
            yield item
        finally:
            with self._changed:
                self._idle.append(item)
                self._changed.notify()

    @property
    def made(self) -> int:
        """Resources made so far (at most `size`)."""
        with self._changed:
            return self._made

    def close(self) -> None:
        """Free every idle resource and refuse new borrows (call once no borrow is running)."""
        with self._changed:
            self._closed = True
            items, self._idle = self._idle, []
            self._made -= len(items)
            self._changed.notify_all()
        for item in items:
            self._free(item)


class InFlight:
    """Counts the calls running on a resource, so that closing it waits for them and refuses new ones.

    Runner promises thread safety: a predict on one thread and close() on another must not free the
    execution context the predict is using.
    """

    def __init__(self, what: str) -> None:
        self._what = what
        self._running = 0
        self._closing = False
        self._changed = threading.Condition()

    @contextmanager
    def enter(self) -> Iterator[None]:
        """Run the body as one call in flight; BadInputError once closing has begun."""
        with self._changed:
            if self._closing:
                raise BadInputError(f"this {self._what} was closed; load it again")
            self._running += 1
        try:
            yield
        finally:
            with self._changed:
                self._running -= 1
                self._changed.notify_all()

    @property
    def running(self) -> int:
        with self._changed:
            return self._running

    def close(self) -> None:
        """Refuse new calls, then wait until the running ones have returned."""
        with self._changed:
            self._closing = True
            self._changed.wait_for(lambda: self._running == 0)


def import_cuda() -> Any:
    """Polygraphy's CUDA wrapper (ctypes over libcudart): device arrays and streams."""
    POLYGRAPHY.load()
    from polygraphy import cuda

    return cuda


def set_device(cuda: Any, index: int) -> None:
    """Make CUDA device `index` current for this thread (the CUDA runtime's current device is per thread)."""
    status = cuda.wrapper().handle.cudaSetDevice(ctypes.c_int(index))
    if status != 0:
        raise InferenceError(f"cudaSetDevice({index}) failed with CUDA error {status}; is device {index} visible?")


class ActivationBlock:
    """One block of device memory for a context's activations: engine.device_memory_size_v2 bytes."""

    def __init__(self, cuda: Any, device: int, size: int) -> None:
        set_device(cuda, device)
        self.cuda, self.device, self.size = cuda, device, size
        self.array = cuda.DeviceArray(shape=(max(size, 1),), dtype=np.uint8) if size > 0 else None

    @property
    def ptr(self) -> int:
        return int(self.array.ptr) if self.array is not None else 0

    def free(self) -> None:
        if self.array is not None:
            set_device(self.cuda, self.device)
            self.array.free()
            self.array = None


class ThreadState:
    """One execution context (without its own activation memory), stream and set of I/O buffers per thread."""

    def __init__(self, engine: trt.ICudaEngine, cuda: Any, device: int, strategy: Any) -> None:
        set_device(cuda, device)
        # USER_MANAGED: the context allocates no activation memory; each run lends it an ActivationBlock.
        context = engine.create_execution_context(strategy)
        if context is None:
            raise InferenceError("TensorRT could not create an execution context (out of GPU memory?)")
        self.context: trt.IExecutionContext = context
        self.cuda, self.device = cuda, device
        self.stream = cuda.Stream()
        self.buffers: dict[str, Any] = {}

    def buffer(self, name: str, shape: tuple[int, ...], dtype: np.dtype[Any]) -> Any:
        array = self.buffers.get(name)
        if array is None:
            array = self.cuda.DeviceArray(shape=shape, dtype=dtype)
            self.buffers[name] = array
        elif tuple(array.shape) != shape:
            array.resize(shape)
        return array

    def free(self) -> None:
        set_device(self.cuda, self.device)  # may run on another thread than the one that made it
        for array in self.buffers.values():
            array.free()
        self.buffers.clear()
        self.stream.free()
        del self.context  # TensorRT destroys the context with its last reference


__all__ = ["ActivationBlock", "Bounded", "InFlight", "PerThread", "ThreadState", "import_cuda", "set_device"]
