"""The library API behind every command, one module per group; import it from ``dockyard``.

``dockyard.build`` lives in :mod:`dockyard.api`; the rest lives here:

* :mod:`._images`: ``images``, ``inspect``, ``history``, ``tag``, ``rmi``;
* :mod:`._registries`: ``pull``, ``push``, ``login``, ``logout``, ``get_login``;
* :mod:`._archives`: ``save``, ``load``, ``import_``, ``export``, ``cp``;
* :mod:`._containers`: ``run``;
* :mod:`._cleanup`: ``prune``, ``cache_ls``, ``cache_du``, ``cache_prune``;
* :mod:`._system`: ``info``.

Each function opens the store at ``root`` (default: ``$DOCKYARD_ROOT``, else
/var/lib/dockyard as root), does one thing under the store's locking rules, closes the
store and returns a frozen dataclass. Nothing here prints: the CLI (``dockyard.cli``)
formats the results. Modules import their rooms lazily, so ``import dockyard`` stays cheap
and each call pays only for what it uses.
"""
