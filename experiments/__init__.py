"""Research tooling, outside the installed package: ``make compare``, ``make tune`` and ``make compare-table`` run
every method x inference rule on the README's sequences and assemble the tables of docs/results.md
(``python -m experiments --help``)."""
