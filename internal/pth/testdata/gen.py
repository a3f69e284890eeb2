"""Regenerates the CPython-pickled test files (python3 gen.py).

A stub `torch` module lets CPython's own pickler write exactly the GLOBALs
and persistent ids torch.save writes, without torch installed:
  cpython_proto{2,4,5}.pkl  data.pkl of the zip format, in three protocols
  cpython_legacy.pth        a complete torch < 1.6 file (_legacy_save layout)
Storages: "0" float32 [0..5], "1" int64 [7], "2" float32 [10..14].
"""
import collections, io, pickle, struct, sys, types

torch = types.ModuleType("torch")
utils = types.ModuleType("torch._utils")
sys.modules["torch"], sys.modules["torch._utils"] = torch, utils


def _rebuild_tensor_v2(*a):
    raise AssertionError("never called")


_rebuild_tensor_v2.__module__ = "torch._utils"
utils._rebuild_tensor_v2 = _rebuild_tensor_v2


class FloatStorage: pass
class LongStorage: pass
FloatStorage.__module__ = LongStorage.__module__ = "torch"
torch.FloatStorage, torch.LongStorage = FloatStorage, LongStorage


class Storage:
    def __init__(self, typ, key, numel, view=None):
        self.typ, self.key, self.numel, self.view = typ, key, numel, view


class Tensor:
    def __init__(self, st, off, size, stride):
        self.args = (st, off, size, stride)

    def __reduce_ex__(self, proto):
        st, off, size, stride = self.args
        return (_rebuild_tensor_v2, (st, off, size, stride, False, collections.OrderedDict()))


s0 = Storage(FloatStorage, "0", 6)
s1 = Storage(LongStorage, "1", 1)
s2 = Storage(FloatStorage, "2", 5)
sd = collections.OrderedDict()
sd["conv.weight"] = Tensor(s0, 0, (2, 3), (3, 1))
sd["conv.weight_t"] = Tensor(s0, 0, (3, 2), (1, 3))
sd["bn.num_batches_tracked"] = Tensor(s1, 0, (), ())
sd["conv.bias"] = Tensor(s2, 1, (2, 2), (1, 2))
sd._metadata = collections.OrderedDict([("", {"version": 1}), ("conv", {"version": 1})])


def dump(obj, proto, legacy):
    buf = io.BytesIO()
    p = pickle.Pickler(buf, protocol=proto)

    def persistent_id(o):
        if isinstance(o, Storage):
            base = ("storage", o.typ, o.key, "cpu", o.numel)
            return base + (None,) if legacy else base
        return None

    p.persistent_id = persistent_id
    p.dump(obj)
    return buf.getvalue()


for proto in (2, 4, 5):
    with open(f"cpython_proto{proto}.pkl", "wb") as f:
        f.write(dump(sd, proto, False))

data = {"0": struct.pack("<6f", 0, 1, 2, 3, 4, 5), "1": struct.pack("<q", 7),
        "2": struct.pack("<5f", 10, 11, 12, 13, 14)}
numel = {"0": 6, "1": 1, "2": 5}
with open("cpython_legacy.pth", "wb") as f:
    pickle.dump(0x1950A86A20F9469CFC6C, f, protocol=2)
    pickle.dump(1001, f, protocol=2)
    pickle.dump(dict(protocol_version=1001, little_endian=True,
                     type_sizes=dict(short=2, int=4, long=8)), f, protocol=2)
    f.write(dump(sd, 2, True))
    keys = sorted(data)
    pickle.dump(keys, f, protocol=2)
    for k in keys:
        f.write(struct.pack("<q", numel[k]))
        f.write(data[k])
