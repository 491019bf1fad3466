import Foundation

/// Every sub-command of `levee`, in the order `levee --help` lists them.
let commands: [any LeveeCommand.Type] = [
    DemoCommand.self,
    SubmitCommand.self,
    ResultCommand.self,
    CancelCommand.self,
    GatewayCommand.self,
    CallbacksCommand.self,
    WorkerCommand.self,
    TraceCommand.self,
    StatusCommand.self,
    ReconcileCommand.self,
    ChaosCommand.self,
    DoctorCommand.self,
    TopicsCommand.self,
    GenerateCommand.self,
    TokenizeCommand.self,
    BrokerCommand.self,
    BenchCommand.self,
    VersionCommand.self,
]

@MainActor func usage() -> String {
    var text = """
    levee — an asynchronous inference pipeline for AIGC jobs, on Apache Kafka.

    Usage: levee <command> [options]     (levee <command> --help for a command's options)

    Commands:

    """
    let width = commands.map { $0.name.count }.max() ?? 0
    for command in commands {
        text += "  " + command.name.padding(toLength: width + 2, withPad: " ", startingAt: 0) + command.summary + "\n"
    }
    return text
}

/// Runs one command line and returns the process's exit code.
func runLevee(_ words: [String]) async -> Int32 {
    guard let name = words.first, name != "--help", name != "-h", name != "help" else {
        printOut(await usage())
        return words.isEmpty ? 64 : 0
    }
    guard let command = commands.first(where: { $0.name == name }) else {
        printError("levee: unknown command '\(name)'\n")
        printError(await usage())
        return 64
    }
    var arguments = Arguments(Array(words.dropFirst()))
    if arguments.wantsHelp && !command.handlesOwnHelp {
        printOut(command.help + "\n")
        return 0
    }
    do {
        try await command.run(&arguments)
        return 0
    } catch let failure as CommandFailure {
        printError("levee \(name): \(failure.message)")
        return failure.exitCode
    } catch {
        printError("levee \(name): \(error)")
        return 1
    }
}

exit(await runLevee(Array(CommandLine.arguments.dropFirst())))
