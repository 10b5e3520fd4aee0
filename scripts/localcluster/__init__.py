"""A one-node Kubernetes cluster on this machine, without systemd and without an image registry.

`scripts/cluster.py` is the command; this package is its parts, one concern a module:

    layout      addresses, ports, folders and pinned versions (nothing here does I/O)
    build       the binaries, compiled once per version into the cache outside the checkout
    pki         the certificate authority, every component's certificate and kubeconfig
    configs     every daemon's command line and configuration files (pure functions)
    host        packages, the bridge and routes, sysctls, and cleaning up what the node leaves
    processes   starting, watching and stopping detached daemons
    ociimage    registry-free images (the pod sandbox) written as `docker save` archives
    node        bringing the node up and down, loading images into its runtime

See docs/kubernetes.md ("The local cluster").
"""
