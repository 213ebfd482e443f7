"""Policy files a privacy officer reads, checks and signs: sharing policies (per partner), the release policy,
the analysis plan, the factor model and the partner registry. Each is TOML parsed into pydantic models."""
