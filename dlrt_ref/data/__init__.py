"""Datasets for DLRT experiments: MNIST (shipped), Fashion-MNIST, CIFAR-10, teacher-student.

Every loader returns a :class:`Dataset` of host numpy arrays: images as floats
in [0, 1] (``flatten=True``: shape (N, features); ``flatten=False``: (N, C, H, W)),
labels as int64. The same keyword arguments select a seeded validation split
and seeded stratified subsets everywhere.

The package's modules, one concept each:

* :mod:`dlrt_ref.data.mnist`: MNIST (shipped with the package, verified by SHA-256) and
  Fashion-MNIST: data folders, loaders, downloads, ``python -m dlrt_ref.data --check``;
* :mod:`dlrt_ref.data.idx`: IDX files, checksums, verified downloads (:class:`DataError`);
* :mod:`dlrt_ref.data.splits`: :class:`Dataset`, validation splits, stratified subsets;
* :mod:`dlrt_ref.data.synthetic`: the teacher-student data;
* :mod:`dlrt_ref.data.cifar`: CIFAR-10 and CIFAR-100 (python pickle batches; verified archives, downloads).

The public names are importable from ``dlrt_ref.data`` itself::

    >>> from dlrt_ref.data import load_mnist
    >>> ds = load_mnist(validation="last")        # the paper's 50k / 10k / 10k
"""
from dlrt_ref.data.mnist import (  # noqa: F401
    DATA_DIR_ENV, FASHION_CLASSES, FASHION_IDX_SHA256, MNIST_FACTS, MNIST_GZ_SHA256, MNIST_IDX_SHA256,
    MNIST_SHIPPED_SHA256, SHIPPED_DIR, check_mnist_facts,
    check_shipped, data_dir, download_fashion_mnist, download_mnist, fashion_folder, load_fashion_mnist, load_mnist,
    mnist_folder, set_data_dir,
)
from dlrt_ref.data.cifar import CIFAR10_CLASSES, download_cifar, load_cifar10, load_cifar100  # noqa: F401
from dlrt_ref.data.idx import DataError, read_idx  # noqa: F401
from dlrt_ref.data.splits import Dataset, make_dataset, stratified_subset, train_val_split  # noqa: F401
from dlrt_ref.data.synthetic import Teacher, teacher_student  # noqa: F401

__all__ = [
    "Dataset", "DataError", "read_idx", "load_mnist", "load_fashion_mnist", "load_cifar10", "load_cifar100",
    "download_cifar", "download_mnist", "download_fashion_mnist", "stratified_subset", "train_val_split",
    "check_mnist_facts", "teacher_student", "Teacher", "SHIPPED_DIR", "CIFAR10_CLASSES", "FASHION_CLASSES",
    "DATA_DIR_ENV", "data_dir", "set_data_dir", "mnist_folder", "fashion_folder",
]
