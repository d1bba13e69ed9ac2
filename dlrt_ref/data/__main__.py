"""``python -m dlrt_ref.data --check``: verify the shipped MNIST (see :func:`dlrt_ref.data.mnist.main`)."""
from dlrt_ref.data.mnist import main

raise SystemExit(main())
