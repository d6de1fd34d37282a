from hypercore.cli.main import main

main()
