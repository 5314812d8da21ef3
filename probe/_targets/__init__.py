"""Targets that come and go: Prometheus file_sd files, http_sd, and enrollment via ``/probe``.

Pure where it can be (parsing, the enrollment registry, the merge of every source into one
name space); the file watcher and the HTTP poller are the only parts doing I/O.
"""

from probe._targets.discovered import SOURCES, DiscoveredTarget, Source, url_name
from probe._targets.enrollment import Decision, EnrollmentRegistry
from probe._targets.file_sd import FileTargets, TargetList, parse_targets
from probe._targets.http_sd import HttpTargets
from probe._targets.merge import EffectiveTarget, Rejection, TargetSet, merge_targets

__all__ = [
    "SOURCES",
    "Decision",
    "DiscoveredTarget",
    "EffectiveTarget",
    "EnrollmentRegistry",
    "FileTargets",
    "HttpTargets",
    "Rejection",
    "Source",
    "TargetList",
    "TargetSet",
    "merge_targets",
    "parse_targets",
    "url_name",
]
