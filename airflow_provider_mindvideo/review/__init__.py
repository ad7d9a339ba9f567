"""Human review: items and decisions (pure), the page a person sees (Markdown and form, pure), sources
(items from a generate task or a batch manifest).
May import client/ only; the review operators (operators/) do the I/O. Re-exports review.items' names.
"""

# airflow_provider_mindvideo.review was one module, now review.items: its names stay importable from here.
from airflow_provider_mindvideo.review.items import *  # noqa: F403
