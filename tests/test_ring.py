import numpy as np

from parley.speech_io.ring import SampleRing


def test_ring_keeps_the_newest_and_reads_by_absolute_index():
    ring = SampleRing(10)
    data = np.arange(1, 26, dtype=np.float32)
    for chunk in np.split(data, [3, 4, 11, 20]):
        ring.append(chunk)
    assert ring.end == 25 and ring.start == 15
    np.testing.assert_array_equal(ring.read(15, 25), data[15:25])
    # outside what is held reads as silence
    np.testing.assert_array_equal(ring.read(12, 17), [0, 0, 0, 16, 17])
    np.testing.assert_array_equal(ring.read(24, 27), [25, 0, 0])


def test_drop_newest():
    ring = SampleRing(8)
    ring.append(np.arange(6, dtype=np.float32))
    ring.drop_newest(2)
    assert ring.end == 4
    ring.append(np.array([9, 9], dtype=np.float32))
    np.testing.assert_array_equal(ring.read(0, 6), [0, 1, 2, 3, 9, 9])
