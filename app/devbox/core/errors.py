"""One error hierarchy for everything a user can cause or meet.

Every error carries a one-line message and a remedy; its exit code is decided here and
nowhere else, so the CLI and the TUI tell the same story.
"""

from __future__ import annotations

from enum import IntEnum, unique


@unique  # two codes with one number would be an alias: a silent bug
class ExitCode(IntEnum):
    OK = 0
    FAILURE = 1
    USAGE = 2
    CONFIG = 3
    PODMAN_MISSING = 4
    PODMAN_UNREACHABLE = 5
    BUILD_FAILED = 6
    GIT = 7
    BAD_NAME = 8
    NOT_FOUND = 9
    BUSY = 10
    REFUSED = 11
    DISK_FULL = 12
    NOT_AVAILABLE = 13
    CONTAINER_FAILED = 14
    TIMEOUT = 15
    VM_FAILED = 16  # terraform or libvirt could not make, change or remove the VM
    INTERRUPTED = 130


class DevboxError(Exception):
    """Base: a message (what went wrong) and a remedy (what to do about it)."""

    exit_code: ExitCode = ExitCode.FAILURE

    def __init__(self, message: str, remedy: str = "", *, detail: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.remedy = remedy
        #: extra lines a face may show (e.g. the last lines of a failed build log)
        self.detail = detail

    def one_line(self) -> str:
        return f"{self.message} ({self.remedy})" if self.remedy else self.message


class ConfigError(DevboxError):
    exit_code = ExitCode.CONFIG


class PodmanMissing(DevboxError):
    exit_code = ExitCode.PODMAN_MISSING


class PodmanUnreachable(DevboxError):
    exit_code = ExitCode.PODMAN_UNREACHABLE


class PodmanError(DevboxError):
    exit_code = ExitCode.FAILURE


class ContainerFailed(DevboxError):
    """A container that would not start or stay up."""

    exit_code = ExitCode.CONTAINER_FAILED


class BuildFailed(DevboxError):
    exit_code = ExitCode.BUILD_FAILED


class GitError(DevboxError):
    exit_code = ExitCode.GIT


class BadName(DevboxError):
    """A branch name or path a user typed that devbox will not act on."""

    exit_code = ExitCode.BAD_NAME


class NotFound(DevboxError):
    exit_code = ExitCode.NOT_FOUND


class Busy(DevboxError):
    """Another devbox process holds the lock for the same thing."""

    exit_code = ExitCode.BUSY


class Refused(DevboxError):
    """A destructive action that would lose work; --force overrides."""

    exit_code = ExitCode.REFUSED


class DiskFull(DevboxError):
    exit_code = ExitCode.DISK_FULL


class NotAvailable(DevboxError):
    exit_code = ExitCode.NOT_AVAILABLE


class ToolMissing(DevboxError):
    """A program devbox runs is not installed (adapters re-raise it with their own code)."""


class ToolTimeout(DevboxError):
    """A tool did not answer in time (a hung socket, a stuck process)."""

    exit_code = ExitCode.TIMEOUT


class Cancelled(DevboxError):
    exit_code = ExitCode.INTERRUPTED

    def __init__(self, message: str = "interrupted", remedy: str = "") -> None:
        super().__init__(message, remedy)


class VmFailed(DevboxError):
    """terraform or libvirt failed on the VM (state is kept: the next run picks up)."""

    exit_code = ExitCode.VM_FAILED
