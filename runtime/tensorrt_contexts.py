"""The context pool: one TensorRT execution context, CUDA stream and set of device buffers per thread.

TensorRT contexts are not thread-safe; the engine is. PerThread makes a thread's resources on its
first call and frees them once the thread has ended; InFlight lets close() wait for running predicts
before the contexts and the engine are freed. Both are pure Python (tested without TensorRT).
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


class ThreadState:
    """One execution context, stream and set of device buffers per thread."""

    def __init__(self, engine: trt.ICudaEngine, cuda: Any, device: int) -> None:
        set_device(cuda, device)
        context = engine.create_execution_context()
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


__all__ = ["InFlight", "PerThread", "ThreadState", "import_cuda", "set_device"]
