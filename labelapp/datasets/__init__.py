"""Datasets in and out of a project.

* ``records`` — the import file formats (parsing only, no database);
* ``importing`` — writes an import into a project, atomically;
* ``exports`` — ``export_run``: one export folder (data file, card, manifest), built
  from ``export_formats`` (kinds, options, schemas, writers), ``export_rows`` (the
  reads) and ``export_card`` (the dataset card);
* ``export_jobs`` — exports as background jobs, and finding their files again.
"""
