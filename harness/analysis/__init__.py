"""Reading reports: statistics (:mod:`.stats`), plain-text tables (:mod:`.tables`),
leaderboards (:mod:`.leaderboard`) and the nightly regression gate (:mod:`.regression`).
Reading a report never runs code it names; code metrics re-run only in the sandbox and
only when asked (``--execute-code``)."""
