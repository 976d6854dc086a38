"""flush_denormals: FTZ/DAZ in the calling thread only. Checked in child processes, so the
test process itself keeps IEEE gradual underflow."""

import platform
import subprocess
import sys
import textwrap

import pytest

X86_GLIBC = platform.machine().lower() in ("x86_64", "amd64") and platform.libc_ver()[0] == "glibc"
needs_x86_glibc = pytest.mark.skipif(
    not X86_GLIBC, reason="FTZ/DAZ are set through glibc's x86-64 fenv_t"
)


def run_child(code: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return result.stdout.strip()


@needs_x86_glibc
def test_denormals_become_zero_after_the_call():
    out = run_child("""
    import numpy as np
    from distnet.fpenv import denormals_flushed, flush_denormals

    tiny = np.array([1e-40], np.float32)  # a float32 denormal
    def products():
        # DAZ: a denormal input reads as 0; FTZ: a denormal result becomes 0.
        return (float((tiny * np.float32(1.0))[0]) == 0,
                float((np.array([1e-30], np.float32) * np.float32(1e-10))[0]) == 0,
                denormals_flushed())
    print(products())
    flush_denormals()
    flush_denormals()  # idempotent
    print(products())
    flush_denormals(False)  # back to IEEE gradual underflow
    print(products())
    """)
    assert out.splitlines() == [
        "(False, False, False)",
        "(True, True, True)",
        "(False, False, False)",
    ]


@needs_x86_glibc
def test_a_thread_started_before_the_call_keeps_denormals():
    out = run_child("""
    import threading
    import numpy as np
    from distnet.fpenv import denormals_flushed, flush_denormals

    go, seen = threading.Event(), []
    def worker():
        go.wait()
        seen.append((float((np.array([1e-40], np.float32) * 1.0)[0]) > 0, denormals_flushed()))
    thread = threading.Thread(target=worker)
    thread.start()
    flush_denormals()
    go.set()
    thread.join()
    print(seen[0], denormals_flushed())
    """)
    assert out == "(True, False) True"


def test_normal_arithmetic_is_unchanged_and_the_call_never_raises():
    # Everywhere (a no-op off x86-64 glibc): numbers above the denormal range are untouched.
    out = run_child("""
    import numpy as np
    from distnet.fpenv import flush_denormals
    x = np.linspace(-3, 3, 101, dtype=np.float32)
    smallest = np.array([np.finfo(np.float32).smallest_normal], np.float32)
    before = (x * 1.7 + 0.3).tobytes(), (smallest * 3).tobytes()
    flush_denormals()
    print((x * 1.7 + 0.3).tobytes() == before[0], (smallest * 3).tobytes() == before[1])
    """)
    assert out == "True True"
