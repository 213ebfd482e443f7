"""One module per section of the report; each builds its ``Section`` from released documents only."""
