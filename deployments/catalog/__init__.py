"""The scenario catalog: reading a tree (directory, `.tar.gz`, memory), hashing it, parsing its files.

    tree = read_tarball(stream)            # or read_directory(path), tree_from_files({...})
    entries, problems = parse_tree(tree)   # {key: normalised document}, [Problem]
"""
from deployments.catalog.parsing import entry_key, parse_file, parse_tree
from deployments.catalog.problems import ERROR, WARNING, Problem
from deployments.catalog.sources import (
    CatalogFile,
    CatalogLimits,
    CatalogTree,
    catalog_limits,
    match_catalog_path,
    read_directory,
    read_tarball,
    tree_from_files,
    tree_hash,
)

__all__ = [
    "ERROR", "WARNING", "CatalogFile", "CatalogLimits", "CatalogTree", "Problem", "catalog_limits", "entry_key",
    "match_catalog_path", "parse_file", "parse_tree", "read_directory", "read_tarball", "tree_from_files",
    "tree_hash",
]
