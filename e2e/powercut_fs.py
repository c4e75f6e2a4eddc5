#!/usr/bin/env python3
"""A FUSE filesystem that forgets what was not synced: the disk of the power-cut tests (issue 24).

    powercut_fs.py MOUNTPOINT IMAGE

Mounts an in-memory filesystem at MOUNTPOINT, starting from IMAGE when it exists. Unmounting it
(`umount MOUNTPOINT`, as root) is the power cut: what was durable is saved to IMAGE, everything else
is lost, and the next mount starts from IMAGE, as a machine restarts on what reached its disk.

Durability follows POSIX strictly, as LazyFS does (and as a disk with a volatile cache does when
the filesystem promises no more than POSIX):
  - a file's bytes and size are durable after fsync or fdatasync of that file;
  - a name (create, mkdir, rename, unlink, link) is durable after fsync of the folder holding it,
    and a new folder exists after a cut only if its parent was synced too;
  - modes, owners and times are kept as they are (no test here depends on them).
ext4's default `data=ordered` mode persists more than this, which is why `kill -9` tests never
show a missing directory fsync; this filesystem does.

Needs the `fusepy` module and libfuse2; runs as root in the tests (CI is root).
"""

import errno
import os
import pickle
import stat
import sys
import threading
import time

from fuse import FUSE, FuseOSError, Operations, fuse_get_context


# POWERCUT_TRACE=fsync,fsyncdir,rename prints those calls (for debugging a test).
TRACE = set(filter(None, os.environ.get("POWERCUT_TRACE", "").split(",")))


class Node:
    """A file or folder. `data`/`entries` are what programs see; `synced_*` what a cut keeps."""

    def __init__(self, is_dir, mode, uid, gid):
        self.is_dir = is_dir
        self.mode = mode & 0o7777
        self.uid, self.gid = uid, gid
        now = time.time_ns()
        self.atime = self.mtime = self.ctime = now
        self.links = 0  # names pointing here in the visible tree
        if is_dir:
            self.entries, self.synced_entries = {}, {}
        else:
            self.data, self.synced_data = bytearray(), b""


def durable_copy(node, memo):
    """The tree as a cut leaves it: synced names only, each file with its synced bytes."""
    if id(node) in memo:
        copy = memo[id(node)]
        copy.links += 1
        return copy
    copy = Node(node.is_dir, node.mode, node.uid, node.gid)
    copy.atime, copy.mtime, copy.ctime = node.atime, node.mtime, node.ctime
    copy.links = 1
    memo[id(node)] = copy
    if node.is_dir:
        for name, child in node.synced_entries.items():
            copy.entries[name] = durable_copy(child, memo)
        copy.synced_entries = dict(copy.entries)
    else:
        copy.data = bytearray(node.synced_data)
        copy.synced_data = bytes(node.synced_data)
    return copy


class PowerCutFS(Operations):
    # Without these, the kernel keeps POSIX and BSD locks itself, which is what SQLite needs.
    lock = None
    flock = None

    def __init__(self, image):
        self.image = image
        self.mutex = threading.RLock()
        self.handles = {}
        self.next_handle = 1
        if os.path.exists(image):
            with open(image, "rb") as f:
                self.root = pickle.load(f)
        else:
            self.root = Node(True, 0o755, os.getuid(), os.getgid())
            self.root.links = 1

    def __call__(self, op, *args):
        if not hasattr(self, op):
            raise FuseOSError(errno.EFAULT)
        with self.mutex:
            if TRACE and op in TRACE:
                print(op, *(a if not isinstance(a, bytes) else len(a) for a in args), flush=True)
            return getattr(self, op)(*args)

    # ---- paths and handles

    def resolve(self, path):
        node = self.root
        for part in path.strip("/").split("/"):
            if not part:
                continue
            if not node.is_dir:
                raise FuseOSError(errno.ENOTDIR)
            node = node.entries.get(part)
            if node is None:
                raise FuseOSError(errno.ENOENT)
        return node

    def parent_and_name(self, path):
        head, _, name = path.rstrip("/").rpartition("/")
        parent = self.resolve(head or "/")
        if not parent.is_dir:
            raise FuseOSError(errno.ENOTDIR)
        return parent, name

    def node(self, path, fh):
        if fh and fh in self.handles:
            return self.handles[fh]
        return self.resolve(path)

    def handle(self, node):
        fh = self.next_handle
        self.next_handle += 1
        self.handles[fh] = node
        return fh

    def new_node(self, is_dir, mode):
        uid, gid, _ = fuse_get_context()
        return Node(is_dir, mode, uid, gid)

    # ---- metadata

    def getattr(self, path, fh=None):
        node = self.node(path, fh)
        kind = stat.S_IFDIR if node.is_dir else stat.S_IFREG
        size = 4096 if node.is_dir else len(node.data)
        return {
            "st_mode": kind | node.mode, "st_nlink": max(node.links, 1) + (1 if node.is_dir else 0),
            "st_uid": node.uid, "st_gid": node.gid, "st_size": size, "st_blocks": (size + 511) // 512,
            "st_atime": node.atime / 1e9, "st_mtime": node.mtime / 1e9, "st_ctime": node.ctime / 1e9,
        }

    def chmod(self, path, mode):
        node = self.resolve(path)
        node.mode = mode & 0o7777
        node.ctime = time.time_ns()

    def chown(self, path, uid, gid):
        node = self.resolve(path)
        if uid != -1 and uid != 0xFFFFFFFF:
            node.uid = uid
        if gid != -1 and gid != 0xFFFFFFFF:
            node.gid = gid

    def utimens(self, path, times=None):
        node = self.resolve(path)
        now = time.time_ns()
        atime, mtime = times if times else (now / 1e9, now / 1e9)
        node.atime, node.mtime = int(atime * 1e9), int(mtime * 1e9)

    def access(self, path, amode):
        self.resolve(path)
        return 0

    def statfs(self, path):
        # Plenty of room: Wharf refuses pushes when the disk looks nearly full.
        return {"f_bsize": 4096, "f_frsize": 4096, "f_blocks": 1 << 24, "f_bfree": 1 << 23, "f_bavail": 1 << 23,
                "f_files": 1 << 20, "f_ffree": 1 << 19, "f_favail": 1 << 19, "f_namemax": 255}

    # ---- folders

    def mkdir(self, path, mode):
        parent, name = self.parent_and_name(path)
        if name in parent.entries:
            raise FuseOSError(errno.EEXIST)
        node = self.new_node(True, mode)
        node.links = 1
        parent.entries[name] = node
        parent.mtime = time.time_ns()

    def rmdir(self, path):
        parent, name = self.parent_and_name(path)
        node = parent.entries.get(name)
        if node is None:
            raise FuseOSError(errno.ENOENT)
        if not node.is_dir:
            raise FuseOSError(errno.ENOTDIR)
        if node.entries:
            raise FuseOSError(errno.ENOTEMPTY)
        del parent.entries[name]
        node.links -= 1

    def opendir(self, path):
        return self.handle(self.resolve(path))

    def releasedir(self, path, fh):
        self.handles.pop(fh, None)

    def readdir(self, path, fh):
        node = self.node(path, fh)
        return [".", ".."] + list(node.entries)

    def fsyncdir(self, path, datasync, fh):
        node = self.node(path, fh)
        node.synced_entries = dict(node.entries)
        return 0

    # ---- names

    def create(self, path, mode, fi=None):
        parent, name = self.parent_and_name(path)
        node = parent.entries.get(name)
        if node is None:
            node = self.new_node(False, mode)
            node.links = 1
            parent.entries[name] = node
            parent.mtime = time.time_ns()
        return self.handle(node)

    def unlink(self, path):
        parent, name = self.parent_and_name(path)
        node = parent.entries.get(name)
        if node is None:
            raise FuseOSError(errno.ENOENT)
        if node.is_dir:
            raise FuseOSError(errno.EISDIR)
        del parent.entries[name]
        node.links -= 1
        parent.mtime = time.time_ns()

    def rename(self, old, new):
        old_parent, old_name = self.parent_and_name(old)
        new_parent, new_name = self.parent_and_name(new)
        node = old_parent.entries.get(old_name)
        if node is None:
            raise FuseOSError(errno.ENOENT)
        replaced = new_parent.entries.get(new_name)
        if replaced is node:
            return
        if replaced is not None:
            if replaced.is_dir and (not node.is_dir or replaced.entries):
                raise FuseOSError(errno.ENOTEMPTY if node.is_dir else errno.EISDIR)
            if node.is_dir and not replaced.is_dir:
                raise FuseOSError(errno.ENOTDIR)
            replaced.links -= 1
        del old_parent.entries[old_name]
        new_parent.entries[new_name] = node
        old_parent.mtime = new_parent.mtime = time.time_ns()

    def link(self, target, source):
        """`target` becomes a new name for `source`."""
        node = self.resolve(source)
        if node.is_dir:
            raise FuseOSError(errno.EPERM)
        parent, name = self.parent_and_name(target)
        if name in parent.entries:
            raise FuseOSError(errno.EEXIST)
        parent.entries[name] = node
        node.links += 1

    # ---- file bytes

    def open(self, path, flags):
        node = self.resolve(path)
        if node.is_dir:
            raise FuseOSError(errno.EISDIR)
        return self.handle(node)

    def release(self, path, fh):
        self.handles.pop(fh, None)

    def flush(self, path, fh):
        return 0  # close(2) promises nothing about durability

    def read(self, path, size, offset, fh):
        return bytes(self.node(path, fh).data[offset:offset + size])

    def write(self, path, data, offset, fh):
        node = self.node(path, fh)
        if offset > len(node.data):
            node.data.extend(b"\0" * (offset - len(node.data)))
        node.data[offset:offset + len(data)] = data
        node.mtime = time.time_ns()
        return len(data)

    def truncate(self, path, length, fh=None):
        node = self.node(path, fh)
        if length < len(node.data):
            del node.data[length:]
        else:
            node.data.extend(b"\0" * (length - len(node.data)))
        node.mtime = time.time_ns()

    def fsync(self, path, datasync, fh):
        node = self.node(path, fh)
        node.synced_data = bytes(node.data)
        return 0

    # ---- the cut

    def destroy(self, path):
        survivor = durable_copy(self.root, {})
        temporary = self.image + ".tmp"
        with open(temporary, "wb") as f:
            pickle.dump(survivor, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(temporary, self.image)


def main():
    mountpoint, image = sys.argv[1], sys.argv[2]
    sys.setrecursionlimit(10000)
    FUSE(PowerCutFS(os.path.abspath(image)), mountpoint, foreground=True, nothreads=False,
         big_writes=True, max_write=131072, default_permissions=False, fsname="powercut")


if __name__ == "__main__":
    main()
