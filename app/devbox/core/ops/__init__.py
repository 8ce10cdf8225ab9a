"""Every use case of devbox, in one place: ``op(session, ..., sink, cancel) -> record``.

The CLI and the TUI call these and nothing else of the core. Each operation reports what
it does as events to ``sink`` (a plain callable), stops when ``cancel`` (a
``threading.Event``) is set, raises a ``DevboxError`` with a remedy when it cannot do its
job, and returns a frozen record.

| operation | does | returns |
|---|---|---|
| ``status`` | image, worktrees, containers; each section on its own | ``Status`` |
| ``image_status`` / ``build_image`` | freshness with reasons / build when stale | ``ImageStatus`` |
| ``list_worktrees`` / ``add_worktree`` | git worktrees | rows / ``Worktree`` |
| ``StateCache`` | a poller's memory of the worktrees' git states (``status(cache=)``) | — |
| ``worktree_loss`` / ``remove_worktree`` | what would be lost / remove it | ``Loss``, ``Removed`` |
| ``start_work`` | worktree, fresh image, running container | ``StartResult`` |
| ``start_several`` | ``start_work`` for several branches at once (one image check) | ``StartedSeveral`` |
| ``list_containers`` / ``find_container`` | this repo's containers | ``Container`` |
| ``stop_container`` / ``container_loss`` / ``remove_container`` | lifecycle | ``Container`` / ``Loss`` / ``Removed`` |
| ``attach_argv`` | the argv of a shell or command in a container, as the user | ``list[str]`` |
| ``watch_containers`` / ``container_stats`` | podman's event stream / CPU and memory (dashboard) | events / stats |
| ``follow_container_log`` / ``activity`` | a container's own log / last commit and diff stat | — / ``Activity`` |
| ``seen_marks`` / ``save_seen_marks`` | which agent states the user has looked at (kept across restarts) | dict / — |
| ``disk_status`` / ``build_disk`` | VM mode's qcow2: freshness / image then disk, each if stale | ``DiskStatus`` |
| ``vm_up`` | image → disk → terraform apply, each only if stale, saying why | ``VmUp`` |
| ``vm_status`` / ``vm_loss`` / ``vm_down`` | VM state and freshness / what teardown loses / teardown | records |
| ``ssh_argv`` / ``vm_ssh`` | ssh into the VM (project key, project known_hosts) | argv / exit code |
| ``dir_push`` / ``dir_pull`` | rsync a directory in or out (``--delete`` listed first; never ``.git``) | ``Synced`` |
| ``plan_dir_push`` / ``is_checkout_root`` | what a push would send / is a path a checkout's root | ``Synced`` / bool |
| ``git_push`` / ``git_pull`` | a branch to ~/repos/<repo> in the VM / back into ``vm/BRANCH`` | ``Moved`` |
| ``vm_upgrade`` | the image into the VM (podman load over ssh), ``bootc switch``/``upgrade``, reboot | ``Upgraded`` |
| ``doctor`` | host checks for VM mode, each with a fix | ``Check`` tuple |
| ``agent_start`` / ``agent_send`` / ``agent_stop`` | an agent in tmux inside the environment | ``AgentStarted`` / — |
| ``list_agents`` / ``agent_attach_argv`` | each environment with its agent's state / attach | rows / argv |
| ``host_agent_start`` / ``host_agent_rows`` / ... | an agent in an environment on another host | started / rows |
| ``vm_agent_start`` / ``vm_agent_rows`` / ... | the same for an agent in the VM (``--vm``), over ssh | started / rows |
| ``diff_branch`` / ``merge`` | a branch against its base / land it (merge, rebase, squash) | diff / merged |
| ``start_task`` / ``compare`` / ``run_checks`` | N agents on one task / side by side / their checks | records |
| ``init_project`` / ``check_templates`` | ``devbox init`` in a git repository / ``--check`` (no session) | records |
| ``host_list`` / ``host_check`` | every host, asked at once / what devbox needs on one | rows / ``Check`` tuple |
| ``host_start_work`` / ``fetch`` / ``host_remove`` | an environment on a host / its commits back / remove | records |
| ``discard_plan`` / ``discard`` | what tearing down the copies not picked loses / do it | ``Discard`` / ``Removed`` |
| ``choose_policy`` | the egress a start asks for (an agent's or ``[container]``'s, flags over it) | ``Policy`` |
| ``net_log`` / ``follow_net_log`` / ``watch_net_log`` | what an environment's proxy answered and refused | ``NetLog`` |
| ``vm_net_log`` | the same for the VM's proxy (``[vm] egress``, on the host) | ``NetLog`` |
| ``net_allow`` / ``net_deny`` | widen / narrow a running environment's list (kept) | ``NetPolicy`` |

Imported lazily (PEP 562): ``from devbox.core import ops`` costs nothing until an
operation is used, so ``./devbox vm ssh`` never loads the container operations and
``./start-work`` never loads VM mode's (builder, terraform, libvirt: a test checks).
Type checkers read the imports below. No
submodule shares a name with an operation (``status`` lives in ``overview.py``, ``doctor``
in ``hostcheck.py``): importing a submodule binds its name on the package, which would
shadow the lazily bound operation (a test checks).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from devbox.core.ops.containers import (
        attach_argv,
        container_loss,
        find_container,
        list_containers,
        remove_container,
        start_several,
        start_work,
        stop_container,
    )
    from devbox.core.ops.dashboard import (
        activity,
        container_stats,
        follow_container_log,
        save_seen_marks,
        seen_marks,
        watch_containers,
    )
    from devbox.core.ops.egress import (
        NetLog,
        NetPolicy,
        choose_policy,
        follow_net_log,
        net_allow,
        net_deny,
        net_log,
        watch_net_log,
    )
    from devbox.core.ops.envsync import sync_branches
    from devbox.core.ops.fleet import (
        AgentStarted,
        agent_attach_argv,
        agent_preview,
        agent_rows,
        agent_send,
        agent_start,
        agent_state_dirs,
        agent_stop,
        attach_hint,
        branch_from_prompt,
        list_agents,
    )
    from devbox.core.ops.fleet_host import (
        host_agent_attach_argv,
        host_agent_preview,
        host_agent_rows,
        host_agent_send,
        host_agent_start,
        host_agent_stop,
    )
    from devbox.core.ops.fleet_vm import (
        vm_agent_attach_argv,
        vm_agent_preview,
        vm_agent_rows,
        vm_agent_send,
        vm_agent_start,
        vm_agent_stop,
    )
    from devbox.core.ops.hostcheck import Check, doctor
    from devbox.core.ops.hostlist import HostRow, host_check, host_list, pick_host
    from devbox.core.ops.overview import build_image, image_status, status
    from devbox.core.ops.radar import Radar, conflicts
    from devbox.core.ops.remote import (
        Fetched,
        HostStarted,
        fetch,
        host_attach_argv,
        host_of,
        host_remove,
        host_start_work,
    )
    from devbox.core.ops.results import ContainerList, Loss, Problem, Removed, StartedSeveral, StartResult
    from devbox.core.ops.review import (
        BranchDiff,
        Merged,
        Pushed,
        base_blocker,
        branch_patch,
        diff_branch,
        merge,
        predict_merge,
        push_branch,
    )
    from devbox.core.ops.scaffold import Initialized, TemplateCheck, check_templates, init_project
    from devbox.core.ops.tasks import (
        Candidate,
        CheckResult,
        Comparison,
        Discard,
        TaskStarted,
        compare,
        discard,
        discard_plan,
        run_checks,
        start_task,
        task_branches,
        task_of,
    )
    from devbox.core.ops.transfer import (
        Moved,
        dir_pull,
        dir_push,
        git_pull,
        git_push,
        is_checkout_root,
        plan_dir_push,
        ssh_argv,
        vm_ssh,
    )
    from devbox.core.ops.upgrade import Upgraded, vm_upgrade
    from devbox.core.ops.views import AgentRow, Section, Status, WorktreeList, WorktreeLoss, WorktreeRow
    from devbox.core.ops.vm import (
        VmDown,
        VmLoss,
        VmOverview,
        VmStatus,
        VmUp,
        build_disk,
        disk_status,
        domain_name,
        list_vms,
        vm_down,
        vm_loss,
        vm_overview,
        vm_status,
        vm_up,
        watch_vms,
    )
    from devbox.core.ops.vm_egress import vm_net_log
    from devbox.core.ops.worktrees import (
        StateCache,
        add_worktree,
        find_worktree,
        list_worktrees,
        remove_worktree,
        worktree_loss,
    )

_WHERE = {
    "choose_policy": "egress",
    "follow_net_log": "egress",
    "net_allow": "egress",
    "net_deny": "egress",
    "net_log": "egress",
    "NetLog": "egress",
    "NetPolicy": "egress",
    "watch_net_log": "egress",
    "vm_net_log": "vm_egress",
    "host_agent_attach_argv": "fleet_host",
    "host_agent_preview": "fleet_host",
    "host_agent_rows": "fleet_host",
    "host_agent_send": "fleet_host",
    "host_agent_start": "fleet_host",
    "host_agent_stop": "fleet_host",
    "Fetched": "remote",
    "HostStarted": "remote",
    "fetch": "remote",
    "host_attach_argv": "remote",
    "host_of": "remote",
    "host_remove": "remote",
    "host_start_work": "remote",
    "HostRow": "hostlist",
    "host_check": "hostlist",
    "host_list": "hostlist",
    "pick_host": "hostlist",
    "Initialized": "scaffold",
    "TemplateCheck": "scaffold",
    "check_templates": "scaffold",
    "init_project": "scaffold",
    "Candidate": "tasks",
    "CheckResult": "tasks",
    "Comparison": "tasks",
    "Discard": "tasks",
    "TaskStarted": "tasks",
    "compare": "tasks",
    "discard": "tasks",
    "sync_branches": "envsync",
    "discard_plan": "tasks",
    "run_checks": "tasks",
    "start_task": "tasks",
    "task_branches": "tasks",
    "task_of": "tasks",
    "AgentRow": "views",
    "AgentStarted": "fleet",
    "agent_attach_argv": "fleet",
    "attach_hint": "fleet",
    "agent_preview": "fleet",
    "agent_rows": "fleet",
    "agent_send": "fleet",
    "agent_start": "fleet",
    "agent_state_dirs": "fleet",
    "agent_stop": "fleet",
    "branch_from_prompt": "fleet",
    "list_agents": "fleet",
    "BranchDiff": "review",
    "Merged": "review",
    "base_blocker": "review",
    "branch_patch": "review",
    "diff_branch": "review",
    "merge": "review",
    "predict_merge": "review",
    "Pushed": "review",
    "push_branch": "review",
    "Radar": "radar",
    "conflicts": "radar",
    "vm_agent_attach_argv": "fleet_vm",
    "vm_agent_preview": "fleet_vm",
    "vm_agent_rows": "fleet_vm",
    "vm_agent_send": "fleet_vm",
    "vm_agent_start": "fleet_vm",
    "vm_agent_stop": "fleet_vm",
    "Check": "hostcheck",
    "ContainerList": "results",
    "WorktreeList": "views",
    "WorktreeLoss": "views",
    "Loss": "results",
    "Moved": "transfer",
    "Problem": "results",
    "Removed": "results",
    "Section": "views",
    "StartResult": "results",
    "StartedSeveral": "results",
    "Status": "views",
    "Upgraded": "upgrade",
    "VmDown": "vm",
    "VmLoss": "vm",
    "VmOverview": "vm",
    "VmStatus": "vm",
    "VmUp": "vm",
    "WorktreeRow": "views",
    "activity": "dashboard",
    "seen_marks": "dashboard",
    "save_seen_marks": "dashboard",
    "add_worktree": "worktrees",
    "attach_argv": "containers",
    "build_disk": "vm",
    "build_image": "overview",
    "container_loss": "containers",
    "container_stats": "dashboard",
    "dir_pull": "transfer",
    "dir_push": "transfer",
    "disk_status": "vm",
    "doctor": "hostcheck",
    "domain_name": "vm",
    "list_vms": "vm",
    "find_container": "containers",
    "find_worktree": "worktrees",
    "follow_container_log": "dashboard",
    "git_pull": "transfer",
    "git_push": "transfer",
    "image_status": "overview",
    "is_checkout_root": "transfer",
    "plan_dir_push": "transfer",
    "list_containers": "containers",
    "list_worktrees": "worktrees",
    "StateCache": "worktrees",
    "remove_container": "containers",
    "remove_worktree": "worktrees",
    "ssh_argv": "transfer",
    "start_work": "containers",
    "start_several": "containers",
    "status": "overview",
    "stop_container": "containers",
    "vm_down": "vm",
    "vm_loss": "vm",
    "vm_overview": "vm",
    "vm_ssh": "transfer",
    "vm_status": "vm",
    "vm_up": "vm",
    "vm_upgrade": "upgrade",
    "watch_containers": "dashboard",
    "watch_vms": "vm",
    "worktree_loss": "worktrees",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'devbox.core.ops' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"devbox.core.ops.{module}"), name)
    globals()[name] = value  # next time, a plain attribute
    return value


__all__ = [
    "AgentRow",
    "AgentStarted",
    "BranchDiff",
    "Candidate",
    "Check",
    "CheckResult",
    "Comparison",
    "ContainerList",
    "Discard",
    "Fetched",
    "HostRow",
    "HostStarted",
    "Initialized",
    "Loss",
    "Merged",
    "Moved",
    "NetLog",
    "NetPolicy",
    "Problem",
    "Pushed",
    "Radar",
    "Removed",
    "Section",
    "StartResult",
    "StartedSeveral",
    "StateCache",
    "Status",
    "TaskStarted",
    "TemplateCheck",
    "Upgraded",
    "VmDown",
    "VmLoss",
    "VmOverview",
    "VmStatus",
    "VmUp",
    "WorktreeList",
    "WorktreeLoss",
    "WorktreeRow",
    "activity",
    "add_worktree",
    "agent_attach_argv",
    "agent_preview",
    "agent_rows",
    "agent_send",
    "agent_start",
    "agent_state_dirs",
    "agent_stop",
    "attach_argv",
    "attach_hint",
    "base_blocker",
    "branch_from_prompt",
    "branch_patch",
    "build_disk",
    "build_image",
    "check_templates",
    "choose_policy",
    "compare",
    "conflicts",
    "container_loss",
    "container_stats",
    "diff_branch",
    "dir_pull",
    "dir_push",
    "discard",
    "discard_plan",
    "disk_status",
    "doctor",
    "domain_name",
    "fetch",
    "find_container",
    "find_worktree",
    "follow_container_log",
    "follow_net_log",
    "git_pull",
    "git_push",
    "host_agent_attach_argv",
    "host_agent_preview",
    "host_agent_rows",
    "host_agent_send",
    "host_agent_start",
    "host_agent_stop",
    "host_attach_argv",
    "host_check",
    "host_list",
    "host_of",
    "host_remove",
    "host_start_work",
    "image_status",
    "init_project",
    "is_checkout_root",
    "list_agents",
    "list_containers",
    "list_vms",
    "list_worktrees",
    "merge",
    "net_allow",
    "net_deny",
    "net_log",
    "pick_host",
    "plan_dir_push",
    "predict_merge",
    "push_branch",
    "remove_container",
    "remove_worktree",
    "run_checks",
    "save_seen_marks",
    "seen_marks",
    "ssh_argv",
    "start_several",
    "start_task",
    "start_work",
    "status",
    "stop_container",
    "sync_branches",
    "task_branches",
    "task_of",
    "vm_agent_attach_argv",
    "vm_agent_preview",
    "vm_agent_rows",
    "vm_agent_send",
    "vm_agent_start",
    "vm_agent_stop",
    "vm_down",
    "vm_loss",
    "vm_net_log",
    "vm_overview",
    "vm_ssh",
    "vm_status",
    "vm_up",
    "vm_upgrade",
    "watch_containers",
    "watch_net_log",
    "watch_vms",
    "worktree_loss",
]
