from aps.cli import main

main()
