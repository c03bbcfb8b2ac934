"""pcd: the daemon inside each PC.

It supervises the desktop (Xvfb and a window manager) and answers the host on one unix socket
(see docs/pcd-protocol.md). It runs on the image's own /usr/bin/python3 with only the stdlib,
python3-pil and python3-xlib, and is copied into images as a top-level package, so it imports
nothing from `corral` and uses relative imports only.
"""
