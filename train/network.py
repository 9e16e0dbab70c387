"""Is a server there? One bounded probe, for what a run needs from the network before it starts (the Hub for
``--init imagenet``, an experiment-tracking server).

Clients such as huggingface_hub's and MLflow's retry a lost server for a minute or more; a run asks once, with a
deadline, and says at once what is wrong instead.
"""

from __future__ import annotations

import threading
import urllib.error
import urllib.request

__all__ = ["unreachable"]


def unreachable(url: str, timeout: float) -> str | None:
    """None when ``url`` (http or https) gives any HTTP answer within ``timeout`` seconds (an error status is an
    answer), else the reason. The request runs in a daemon thread abandoned at the deadline: a server that accepts
    and never answers, or answers byte by byte, cannot hold the caller."""
    if not url.lower().startswith(("http://", "https://")):
        return f"{url} is not an http(s) address"
    outcome: dict = {}

    def probe():
        try:
            with urllib.request.urlopen(url, timeout=timeout):  # noqa: S310 (http(s) only, checked above)
                pass
        except urllib.error.HTTPError:
            pass  # it answered
        except (OSError, ValueError) as e:
            outcome["error"] = str(getattr(e, "reason", e))

    worker = threading.Thread(target=probe, daemon=True, name="reachability-probe")
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        return f"no answer within {timeout:g} s"
    return outcome.get("error")
