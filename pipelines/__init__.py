"""Pipelines: jobs (plain functions), Airflow DAGs and the troupe CLI."""
