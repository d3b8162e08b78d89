"""Ansible's linear strategy, run through Mitogen (ansible.cfg sets it).

Why: a plain run starts a new Python on the host and ships the module for every task, about
0.3 s each; Mitogen keeps one interpreter per host for the whole play and caches what it
ships. The no-op deploy (bench/deploy.py) is where that shows. Ansible finds strategies only
on configured paths, so this file points it at the one installed with the `mitogen` package.
Mitogen takes over the ssh, docker and local connections (the inventories use those names);
any other connection runs as Ansible runs it.
"""

from ansible_mitogen.plugins.strategy.mitogen_linear import StrategyModule

__all__ = ["StrategyModule"]
