"""Device buffers for the TensorRT engine, through torch when present, else cuda-python."""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from agent.errors import EngineUnavailable


class DeviceBuffer(Protocol):
    """A block of GPU memory."""

    ptr: int

    def write(self, array: np.ndarray[Any, Any]) -> None:
        """Copy a host array to the start of the buffer."""
        ...

    def read(self, array: np.ndarray[Any, Any], offset: int = 0) -> None:
        """Fill a host array from the buffer, starting `offset` bytes in."""
        ...


class CudaMemory(Protocol):
    """Allocates buffers and owns the stream TensorRT runs on."""

    stream: int

    def alloc(self, nbytes: int) -> DeviceBuffer:
        """A buffer of at least nbytes (never zero-sized)."""
        ...

    def sync(self) -> None:
        """Wait for the stream."""
        ...


class _TorchBuffer:
    def __init__(self, torch: Any, nbytes: int) -> None:
        self._torch = torch
        self._data = torch.empty(max(nbytes, 1), dtype=torch.uint8, device="cuda")
        self.ptr = int(self._data.data_ptr())

    def write(self, array: np.ndarray[Any, Any]) -> None:
        host = self._torch.from_numpy(np.ascontiguousarray(array).view(np.uint8).reshape(-1))
        self._data[: host.numel()].copy_(host, non_blocking=False)

    def read(self, array: np.ndarray[Any, Any], offset: int = 0) -> None:
        host = self._torch.from_numpy(array.view(np.uint8).reshape(-1))
        host.copy_(self._data[offset : offset + host.numel()])


class TorchMemory:
    """GPU memory from torch's caching allocator, on torch's current stream."""

    def __init__(self, torch: Any) -> None:
        self._torch = torch
        self.stream = int(torch.cuda.current_stream().cuda_stream)

    def alloc(self, nbytes: int) -> DeviceBuffer:
        """A torch-owned buffer."""
        return _TorchBuffer(self._torch, nbytes)

    def sync(self) -> None:
        """Wait for the stream."""
        self._torch.cuda.current_stream().synchronize()


def _check(result: Any) -> Any:
    err, *rest = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise RuntimeError(f"CUDA error {err}")
    return rest[0] if len(rest) == 1 else rest


class _CudartBuffer:
    def __init__(self, cudart: Any, nbytes: int) -> None:
        self._cudart = cudart
        self.ptr = int(_check(cudart.cudaMalloc(max(nbytes, 1))))

    def write(self, array: np.ndarray[Any, Any]) -> None:
        host = np.ascontiguousarray(array)
        kind = self._cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        _check(self._cudart.cudaMemcpy(self.ptr, host.ctypes.data, host.nbytes, kind))

    def read(self, array: np.ndarray[Any, Any], offset: int = 0) -> None:
        kind = self._cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        _check(self._cudart.cudaMemcpy(array.ctypes.data, self.ptr + offset, array.nbytes, kind))

    def __del__(self) -> None:
        self._cudart.cudaFree(self.ptr)


class CudartMemory:
    """GPU memory through cuda-python's runtime bindings (what a Jetson without torch has)."""

    def __init__(self, cudart: Any) -> None:
        self._cudart = cudart
        self.stream = int(_check(cudart.cudaStreamCreate()))

    def alloc(self, nbytes: int) -> DeviceBuffer:
        """A cudaMalloc'd buffer, freed when dropped."""
        return _CudartBuffer(self._cudart, nbytes)

    def sync(self) -> None:
        """Wait for the stream."""
        _check(self._cudart.cudaStreamSynchronize(self.stream))


def open_cuda_memory() -> CudaMemory:
    """torch if it sees a GPU, else cuda-python; EngineUnavailable when neither works."""
    try:
        import torch

        if torch.cuda.is_available():
            return TorchMemory(torch)
    except ImportError:
        pass
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart
        except ImportError as exc:
            raise EngineUnavailable(
                "TensorRT needs torch with CUDA or cuda-python: pip install cuda-python"
            ) from exc
    count = _check(cudart.cudaGetDeviceCount())
    if not count:
        raise EngineUnavailable("no CUDA device is present")
    return CudartMemory(cudart)
