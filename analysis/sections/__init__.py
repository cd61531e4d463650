"""The report's sections, one module each: ``UNIT`` (a ``analysis.context.SectionUnit``: title,
question, kind) and its build from the typed ``ReportContext``. ``analysis.report`` lists them in order."""
