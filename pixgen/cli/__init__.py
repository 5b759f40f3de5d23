"""The command line: parses arguments, builds Settings, calls the library and reports. No torch at
import (`pixgen --help` stays fast).

    app      the Typer app: generate (the default command), sample, reproduce, resume, presets;
             routing, exit codes, errors caught by type
    runs     batch and restyle
    models   pixgen models ...
    clip     score, classify, search
    serve    pixgen serve
    options  shared options, the setting flags generated from Settings, the help panels
    console  what the terminal shows: progress bar, status line, Ctrl-C, tables
"""
